"""`t2i-adapter demo train`: rebuild every demo weight from nothing, then evaluate them.

1. the base model (VAE, then UNet + text encoder) with `train_base`;
2. the sketch, depth and colour adapters with the project's trainer (`train_adapters`);
3. the fidelity evaluation of each adapter (and of sketch + colour together) on fresh scenes.

Everything is written under `work_dir`; the weights go to `work_dir/weights` (the layout of the
packaged `t2i_adapter/demo/weights`), and `install=True` copies them into the package.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from t2i_adapter.demo.evaluate import EvalConfig, run_evaluation
from t2i_adapter.demo.train_adapters import AdapterTrainingPlan, train_demo_adapters
from t2i_adapter.demo.train_base import BaseTrainingConfig, train_base_model
from t2i_adapter.demo_weights import WEIGHTS_ENV

EVALUATIONS: tuple[tuple[str, ...], ...] = (("sketch",), ("depth",), ("color",), ("sketch", "color"))


@dataclass
class RebuildPlan:
    base: BaseTrainingConfig = field(default_factory=BaseTrainingConfig)
    adapters: AdapterTrainingPlan = field(default_factory=AdapterTrainingPlan)
    eval_scenes: int = 200
    eval_steps: int = 20


def _model_files_only(trained: Path, dest: Path) -> Path:
    """Copy a trained diffusers model folder without the training extras."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(trained, dest)
    return dest


def rebuild_demo(
    work_dir: str | Path,
    plan: RebuildPlan | None = None,
    *,
    install: bool = False,
    skip_base: bool = False,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Train base model and adapters, evaluate them; returns the weights folder."""
    plan = plan or RebuildPlan()
    work_dir = Path(work_dir)
    weights = work_dir / "weights"
    started = time.time()
    if not skip_base:
        trained_base = train_base_model(work_dir / "base", plan.base, echo=echo)
        _model_files_only(trained_base, weights / "base")
    train_demo_adapters(weights / "base", work_dir, weights, plan=plan.adapters, echo=echo)
    minutes = {"training": round((time.time() - started) / 60, 1)}

    previous = os.environ.get(WEIGHTS_ENV)
    os.environ[WEIGHTS_ENV] = str(weights)  # `demo` and `demo:<cond>` mean the fresh weights here
    summary = {}
    try:
        for cond_types in EVALUATIONS:
            label = "+".join(cond_types)
            config = EvalConfig(
                model="demo",
                adapters=[f"demo:{c}" for c in cond_types],
                cond_types=list(cond_types),
                num=plan.eval_scenes,
                steps=plan.eval_steps,
                device=None,  # the GPU when there is one, as for training
                out_dir=str(work_dir / "evaluation" / label),
            )
            report = run_evaluation(config)
            summary[label] = report.means
            if echo:
                echo(f"{label}:\n{report.table()}")
    finally:
        if previous is None:
            os.environ.pop(WEIGHTS_ENV, None)
        else:
            os.environ[WEIGHTS_ENV] = previous
    minutes["total"] = round((time.time() - started) / 60, 1)
    (work_dir / "evaluation").mkdir(parents=True, exist_ok=True)
    (work_dir / "evaluation" / "summary.json").write_text(
        json.dumps({"minutes": minutes, **summary}, indent=1)
    )
    if install:
        packaged = Path(__file__).resolve().parent / "weights"
        if packaged.exists():
            shutil.rmtree(packaged)
        shutil.copytree(weights, packaged)
    return weights
